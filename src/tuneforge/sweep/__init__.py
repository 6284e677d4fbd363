"""`tuneforge sweep`: Optuna searches the training settings; each trial is a real `tuneforge train` process."""
