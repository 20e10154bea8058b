"""How each LoadGen scenario turns queries into backend batches."""
