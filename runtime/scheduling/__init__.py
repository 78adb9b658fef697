"""Time: fire times and the DST policy, catch-up planning, the ticker, SLA timers."""
