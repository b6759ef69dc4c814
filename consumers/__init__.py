"""streamrec consumers package."""
