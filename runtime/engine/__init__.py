"""One run: the ready set and slot chains (limits), attempts, rules, recording, events, and the
runner that creates runs and hands them to the engine."""
