from captcha_api.service.app import create_app

app = create_app()
