"""What a person looks at: the terminal live view and summary, and PNG figures drawn from records."""
