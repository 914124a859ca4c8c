"""hipchat-addon: an Atlassian Connect add-on server for HipChat."""
