"""The interactive screens: thin adapters that ask, call one app function, and show."""
