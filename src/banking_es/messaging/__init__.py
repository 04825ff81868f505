"""Messages leaving the service: the outbox relay (and Kafka when configured)."""
