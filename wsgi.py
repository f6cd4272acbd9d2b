from captcha_api.app import create_app

app = create_app()
