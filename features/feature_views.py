"""One FeatureView per feature family; fields derive from the feature spec, never listed by hand."""

from millet.serving.definitions import feature_views

globals().update({f"{view.name}_view": view for view in feature_views()})
