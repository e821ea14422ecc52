"""The EM3 model: content encoder + ranking model, its losses (CIC, interest), and the one place that builds it."""
