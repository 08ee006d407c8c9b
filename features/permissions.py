"""Who may read what (Feast permissions): each feature service names the roles that read it."""

from millet.serving.definitions import permissions

globals().update({permission.name.replace("-", "_"): permission for permission in permissions()})
