"""The published split files and the script that writes a split for your own data."""
