"""Queues: messages, the embedded SQLite transport, the consumer loop, retries and failed messages."""
