"""FederatedRound: its handlers and the status they decide."""
