"""Drop-in entry points for users of other KDA libraries."""
