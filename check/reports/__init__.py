"""Pure parsers of scanner reports: bytes in, normalized findings out.

- `sarif`: QScanner's `*-Report.sarif.json` (vulnerabilities, by QID)
- `scanresult`: QScanner's `*-ScanResult.json` (image metadata, inventory, secrets)
- `trivy`: `trivy image -f json`
- `grype`: `grype -o json`

None of them touches the filesystem or the network; the runners read the files and hand
the bytes over with the file name, which every `ReportParseError` quotes.
"""
