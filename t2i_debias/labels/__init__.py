"""Demographic labelling: one interface (`DemographicClassifier`), several backends."""
