"""public_health: see DESIGN.md; grows with its issues."""
