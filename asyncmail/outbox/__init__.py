"""The durable outbox: messages wait in a store (SQLite or Redis) until a worker delivers them."""
