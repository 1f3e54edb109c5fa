"""The conformance suite: checks that every framework adapter and backend computes what unirl promises."""
