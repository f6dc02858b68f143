"""One module per external program we drive; nothing else in imagewright calls subprocess."""
