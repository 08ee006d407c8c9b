"""Point-in-time training sets: the ASOF offline store behind Feast's get_historical_features, and
the training tables built with it."""
