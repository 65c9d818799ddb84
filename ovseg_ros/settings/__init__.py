"""Settings: every tunable with its default, description and validation (config), the
node's own read-only options (node_options), ROS 2 params files and flat YAML read into them
(params_file), the prompt template sets a setting names (templates) and SettingsError
(errors). Imports nothing else from the package: every other part reads it.
"""
