"""Auto-routing (routing/): which policy routed a request, the prompt's most likely cluster, each
candidate's predicted error, how long the decision took and why it went as it did. Empty for
requests that named a model. resolved_model stays the model that answered."""

STATEMENTS = [
    # The policy's name ("auto" for the built-in one); few distinct values per project.
    "ALTER TABLE traces ADD COLUMN IF NOT EXISTS route_policy LowCardinality(String) DEFAULT '' AFTER fallbacks",
    # The most likely cluster's key: "prior:<slug>" or a Cluster identity (a UUID string).
    "ALTER TABLE traces ADD COLUMN IF NOT EXISTS route_cluster String DEFAULT '' AFTER route_policy",
    # candidate model -> predicted error rate; Float32 is ample for a probability.
    "ALTER TABLE traces ADD COLUMN IF NOT EXISTS route_predicted Map(String, Float32) AFTER route_cluster",
    # Embedding + decision, in ms (part of overhead_ms).
    "ALTER TABLE traces ADD COLUMN IF NOT EXISTS route_decision_ms Float32 DEFAULT 0 AFTER route_predicted",
    # "; "-joined notes: prompt truncated for routing, no profile data (default model), ...
    "ALTER TABLE traces ADD COLUMN IF NOT EXISTS route_note String DEFAULT '' AFTER route_decision_ms",
]
