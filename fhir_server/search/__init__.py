"""Search: parameter registry, index extraction, query building."""
