password = os.environ["DB_PASSWORD"]
token = self.token
secret = get_secret("db")
api_key = settings.API_KEY
password_field = forms.CharField(widget=forms.PasswordInput)
tokenizer = AutoTokenizer.from_pretrained("bert-base-uncased")
auth = HTTPBasicAuth(user, pw)
password_hash = "$2b$12$80ag5FWidMDqjK/T/UEQamyx4veRfalhGlAjULd87AQtMOrok1CV5"
if line.startswith("-----BEGIN RSA PRIVATE KEY-----"):
AUTH_TYPE=oauth2
