/// The browser update page served at `/ota` (and `/ota.html`). The form POSTs the image file as the raw request
/// body (`Content-Type: application/octet-stream`) to `/ota`; the HTTP layer hands those bytes to
/// `FirmwareUpdater.installUploadedImage` and replies with `replyText(for:)` as text/plain.
public enum OTAPage {
    /// The exact success text of the MeterExtension #1 manual (3.1.2).
    public static let successText = "Update_Success!_Rebooting..."

    public static func replyText(for result: Result<InstalledFirmware, UpdateError>) -> String {
        switch result {
        case .success: return successText
        case .failure(let error): return "Update_Failed: \(error.message) (\(error.code))"
        }
    }

    public static let html = """
    <!DOCTYPE html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>MeterExtension firmware update</title>
    <style>
    body { font-family: sans-serif; max-width: 32em; margin: 2em auto; padding: 0 1em; }
    #result { margin-top: 1em; font-weight: bold; white-space: pre-wrap; }
    progress { width: 100%; }
    </style>
    </head>
    <body>
    <h1>Firmware update</h1>
    <p>Choose a signed <code>meterext</code> update image (<code>.img</code>) and press <em>Update</em>.
    The board checks the signature before installing; the current version stays installed and comes back
    automatically if the new one does not start.</p>
    <form id="ota" method="post" action="/ota" enctype="application/octet-stream">
    <input type="file" id="image" name="image" required>
    <button type="submit">Update</button>
    </form>
    <progress id="progress" max="100" value="0" hidden></progress>
    <div id="result"></div>
    <script>
    document.getElementById('ota').addEventListener('submit', function (event) {
      event.preventDefault();
      var file = document.getElementById('image').files[0];
      if (!file) { return; }
      var request = new XMLHttpRequest();
      var bar = document.getElementById('progress');
      var result = document.getElementById('result');
      bar.hidden = false;
      result.textContent = 'Uploading...';
      request.upload.onprogress = function (e) { if (e.lengthComputable) { bar.value = 100 * e.loaded / e.total; } };
      request.onload = function () { result.textContent = request.responseText; };
      request.onerror = function () { result.textContent = 'Upload failed: the connection to the board broke.'; };
      request.open('POST', '/ota');
      request.setRequestHeader('Content-Type', 'application/octet-stream');
      request.send(file);
    });
    </script>
    </body>
    </html>
    """
}
