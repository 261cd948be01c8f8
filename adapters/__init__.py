"""adapters: see DESIGN.md; grows with its issues."""
