"""Operations services: training and the model registry, freshness, alerts, run outcomes, metrics,
access tokens."""
