"""decode -> detect -> align -> embed, one small module each."""
