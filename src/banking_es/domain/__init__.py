"""The pure domain: money, the Account aggregate, its events and rules. Standard library only."""
