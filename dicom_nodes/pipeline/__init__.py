"""The pipeline after reception: routes, priority lanes, state transitions, jobs, worker."""
