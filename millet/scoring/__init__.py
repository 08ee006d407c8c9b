"""The models the lender runs on the feature space, trained from the store, and the decisions they drive."""
