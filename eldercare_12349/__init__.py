"""eldercare_12349: see DESIGN.md; grows with its issues."""
