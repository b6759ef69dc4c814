"""streamrec model package."""
