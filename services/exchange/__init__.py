"""Exchange — brokers queries from consuming to providing departments over Kafka."""
