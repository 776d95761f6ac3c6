"""Infrastructure: container specs, database configuration steps and the Pulumi program."""
