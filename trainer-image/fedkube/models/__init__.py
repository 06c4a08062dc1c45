"""Models (torch): built-ins and the user's own through an import path
(``fedkube.models.registry``), the site's allow-list of import paths (``plugins``), and the
first model built in a child process (``first_model``), for the aggregator that has no torch.

Nothing is imported here: importing ``fedkube.models.plugins`` must not import torch."""
