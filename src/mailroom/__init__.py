"""mailroom: self-hostable email campaigns."""
