"""Users' models: the v3 repository API's store, the frameworks it takes, and the checks of what is uploaded."""
