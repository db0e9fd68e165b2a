"""The state store: jobs, runs, claims and the tick watermark."""
