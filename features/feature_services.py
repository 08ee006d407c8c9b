"""Feature services, one per model, versioned."""

from millet.serving.definitions import feature_services

globals().update({service.name: service for service in feature_services()})
