"""The built-in offline scanner: image access, inventory, versions, advisories, secrets."""
