"""streamrec streaming package."""
