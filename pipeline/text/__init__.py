"""Text in: find the inputs, decode them, guess their language, count tokens and chunk them."""
