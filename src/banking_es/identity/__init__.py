"""Identity and access: users, passwords, JWT sessions, roles and ownership."""
