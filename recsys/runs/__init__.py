"""Run directories, their artifacts, MLflow tracking and candidate selection."""
