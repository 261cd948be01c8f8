"""Regional health archive and master patient index: identifier systems and resident record linkage."""
