#compdef evstream

_evstream_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _EVSTREAM_COMPLETE=complete_zsh evstream)
}

compdef _evstream_completion evstream
