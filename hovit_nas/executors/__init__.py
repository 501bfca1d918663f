"""Where trials run: in this process (local) or on a Ray cluster. Same trial function, same records."""
