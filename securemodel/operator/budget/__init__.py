"""PrivacyBudget: the ledger's transactions in the API server, their batching, the budget's status, its handlers."""
