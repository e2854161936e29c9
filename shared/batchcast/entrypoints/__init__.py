"""What a deployment runs: the runtime that wires ports to steps, Cloud Functions entry, the training job."""
