"""The entity every Millet feature is keyed on."""

from millet.serving.definitions import user_entity

user = user_entity()
