"""What users and the plugin ask the engine to do (jobs), and the command line, worker and demo."""
