"""The map phase on Ray Data: the driver (engine), the planning tasks (plan) and the call actors (calls)."""
