"""Rate limits: the limiter (`limiter`) and the windows it keeps in this server (`windows`)."""
